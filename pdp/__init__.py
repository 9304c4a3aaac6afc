"""A centralized policy decision point: may this subject do this action on this resource?"""

__version__ = "0.1.0"
