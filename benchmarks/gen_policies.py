"""Generate the engine benchmark's scenario, once, in three policy languages.

One abstract scenario (teams of roles with inheritance, `**` resource
patterns, one top-level deny with a reason, one rule in ten with an
ownership condition, subjects granted roles by the directory and by `grant`
lines, and a fixed set of random requests) is written out as:

- our policy language (a folder of `*.policy` and `*.subjects.json` files),
- Cedar (policy text and an entity list for cedarpy),
- Casbin (a model with role hierarchy and a deny effect, and a policy CSV),

so that every engine answers exactly the same questions.

Run on its own to look at a set: `python -m benchmarks.gen_policies 1k /tmp/set`.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 20261125
REQUESTS = 10_000
TEAMS_PER_FILE = 100
SUBJECTS_PER_FILE = 10_000
RULES_PER_TEAM = 10


SCENARIO = (
    "Scenario (benchmarks/gen_policies.py): per team of ten rules, roles viewer < editor < admin "
    "(`inherits`) on `document:team-N/**`, `wiki:team-N/**`, `project:team-N/**` and "
    "`audit-log:team-N/**`, one rule with `when resource.owner == subject.id`, two top-level "
    "rules on exact resources, a `grant` to the team's indexer service; one top-level "
    "`deny delete on document:**/legal-hold/**` with a reason; subjects get roles from "
    "`*.subjects.json` files. Requests: 10,000, fixed seed, users, services and unknown "
    "subjects, mostly on their own team."
)


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    rules: int
    subjects: int

    @property
    def teams(self) -> int:
        return max(1, self.rules // RULES_PER_TEAM)


SIZES = (
    Size("10", 10, 100),
    Size("1k", 1_000, 10_000),
    Size("100k", 100_000, 100_000),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. `pattern` is the resource ID pattern; it uses only `**`."""

    effect: str  # "allow" | "deny"
    actions: tuple[str, ...]  # () means any action (`*`)
    rtype: str
    pattern: str
    owner_only: bool = False  # `when resource.owner == subject.id`
    reason: str = ""
    name: str = ""

    @property
    def exact(self) -> bool:
        return "*" not in self.pattern


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    inherits: tuple[str, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Team:
    roles: tuple[Role, ...]
    top_rules: tuple[Rule, ...]
    grants: tuple[tuple[str, str], ...]  # (role, subject)


@dataclass(frozen=True, slots=True)
class Req:
    stype: str
    sid: str
    action: str
    rtype: str
    rid: str
    owner: str | None

    def as_list(self) -> list[str | None]:
        return [self.stype, self.sid, self.action, self.rtype, self.rid, self.owner]


@dataclass(slots=True)
class Scenario:
    size: Size
    teams: list[Team]
    global_rules: list[Rule]
    directory: dict[str, dict[str, Any]]
    requests: list[Req] = field(default_factory=list)

    def rule_count(self) -> int:
        in_teams = sum(len(t.top_rules) + sum(len(r.rules) for r in t.roles) for t in self.teams)
        return in_teams + len(self.global_rules)

    def roles(self) -> Iterator[Role]:
        for team in self.teams:
            yield from team.roles

    def grants(self) -> Iterator[tuple[str, str]]:
        for team in self.teams:
            yield from team.grants


LEGAL_HOLD = Rule(
    "deny",
    ("delete",),
    "document",
    "**/legal-hold/**",
    reason="documents under legal hold may not be deleted",
    name="legal-hold",
)


def make_team(k: int, with_index_rule: bool = True) -> Team:
    """Ten rules (nine for team 0, which makes room for the global deny)."""
    t = f"team-{k}"
    viewer = Role(
        f"{t}-viewer",
        (),
        (
            Rule("allow", ("read", "list"), "document", f"{t}/**"),
            Rule("allow", ("read",), "wiki", f"{t}/**"),
        ),
    )
    editor = Role(
        f"{t}-editor",
        (viewer.name,),
        (
            Rule("allow", ("write",), "document", f"{t}/**"),
            Rule("allow", ("write", "comment"), "wiki", f"{t}/**"),
            Rule(
                "allow",
                ("delete",),
                "document",
                f"{t}/drafts/**",
                owner_only=True,
                reason="editors may delete their own drafts",
                name=f"{t}-delete-own-draft",
            ),
        ),
    )
    admin = Role(
        f"{t}-admin",
        (editor.name,),
        (
            Rule("allow", ("delete", "share"), "document", f"{t}/**"),
            Rule("allow", (), "project", f"{t}/**"),
            Rule("allow", ("read",), "audit-log", f"{t}/**"),
        ),
    )
    top = [Rule("allow", ("read",), "document", f"{t}/handbook.pdf")]
    if with_index_rule:
        top.append(Rule("allow", ("list",), "wiki", f"{t}/index"))
    grants = ((viewer.name, f"service:indexer-{k}"),)
    return Team((viewer, editor, admin), tuple(top), grants)


def make_directory(size: Size, rng: random.Random) -> dict[str, dict[str, Any]]:
    teams = size.teams
    directory: dict[str, dict[str, Any]] = {}
    for n in range(size.subjects):
        home = n % teams
        tier = rng.choices(("viewer", "editor", "admin"), (60, 30, 10))[0]
        roles = [f"team-{home}-{tier}"]
        if teams > 1 and rng.random() < 0.2:
            roles.append(f"team-{rng.randrange(teams)}-viewer")
        props = {"email": f"u{n}@example.com", "team": f"team-{home}"}
        directory[f"user:u{n}"] = {"roles": roles, "properties": props}
    return directory


ACTIONS = {
    "document": ("read", "list", "write", "delete", "share"),
    "wiki": ("read", "list", "write", "comment"),
    "project": ("deploy", "read", "configure"),
    "audit-log": ("read", "write"),
}
RTYPE_WEIGHTS = {"document": 60, "wiki": 20, "project": 10, "audit-log": 10}


def make_resource(i: int, team: int, sid: str, size: Size, rng: random.Random) -> Req:
    rtype = rng.choices(tuple(RTYPE_WEIGHTS), tuple(RTYPE_WEIGHTS.values()))[0]
    action = rng.choice(ACTIONS[rtype])
    t = f"team-{team}"
    owner = None
    if rtype == "document":
        kind = rng.choices(("specs", "drafts", "legal-hold", "handbook"), (40, 30, 15, 15))[0]
        if kind == "drafts":
            rid = f"{t}/drafts/d-{i}"
            owner = sid if rng.random() < 0.5 else f"u{rng.randrange(size.subjects)}"
        elif kind == "handbook":
            rid = f"{t}/handbook.pdf"
        else:
            rid = f"{t}/{kind}/{kind[0]}-{rng.randrange(50)}"
    elif rtype == "wiki":
        rid = f"{t}/index" if rng.random() < 0.3 else f"{t}/page-{rng.randrange(50)}"
    elif rtype == "project":
        rid = f"{t}/svc-{rng.randrange(10)}"
    else:
        rid = f"{t}/2026-{rng.randrange(1, 13):02d}"
    return Req("", sid, action, rtype, rid, owner)


def make_requests(size: Size, rng: random.Random, count: int = REQUESTS) -> list[Req]:
    teams = size.teams
    out: list[Req] = []
    for i in range(count):
        r = rng.random()
        if r < 0.85:
            n = rng.randrange(size.subjects)
            stype, sid, home = "user", f"u{n}", n % teams
        elif r < 0.92:
            home = rng.randrange(teams)
            stype, sid = "service", f"indexer-{home}"
        else:
            stype, sid, home = "user", f"guest-{i}", rng.randrange(teams)
        team = home if rng.random() < 0.75 else rng.randrange(teams)
        req = make_resource(i, team, sid, size, rng)
        out.append(Req(stype, sid, req.action, req.rtype, req.rid, req.owner))
    return out


def make_scenario(size: Size, seed: int = SEED, requests: int = REQUESTS) -> Scenario:
    rng = random.Random(f"{seed}-{size.name}")
    teams = [make_team(k, with_index_rule=k != 0) for k in range(size.teams)]
    scn = Scenario(size, teams, [LEGAL_HOLD], make_directory(size, rng))
    scn.requests = make_requests(size, rng, requests)
    return scn


# ---- our policy language ----


def _ours_rule(rule: Rule) -> str:
    actions = ", ".join(rule.actions) if rule.actions else "*"
    text = f"{rule.effect} {actions} on {rule.rtype}:{rule.pattern}"
    if rule.owner_only:
        text += " when resource.owner == subject.id"
    if rule.reason:
        text += f' reason "{rule.reason}"'
    if rule.name:
        text += f" as {rule.name}"
    return text


def _ours_team(team: Team) -> list[str]:
    lines: list[str] = []
    for role in team.roles:
        inherits = f" inherits {', '.join(role.inherits)}" if role.inherits else ""
        lines.append(f"role {role.name}{inherits} {{")
        lines.extend(f"    {_ours_rule(r)}" for r in role.rules)
        lines.append("}")
    lines.extend(_ours_rule(r) for r in team.top_rules)
    lines.extend(f"grant {role} to {subject}" for role, subject in team.grants)
    lines.append("")
    return lines


def write_ours(scn: Scenario, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Applies to every subject, whatever its roles."]
    lines.extend(_ours_rule(r) for r in scn.global_rules)
    (out / "global.policy").write_text("\n".join(lines) + "\n")
    for start in range(0, len(scn.teams), TEAMS_PER_FILE):
        chunk = scn.teams[start : start + TEAMS_PER_FILE]
        text = "\n".join(line for team in chunk for line in _ours_team(team))
        (out / f"teams-{start // TEAMS_PER_FILE:04d}.policy").write_text(text)
    people = list(scn.directory.items())
    (out / "directory").mkdir(exist_ok=True)
    for start in range(0, len(people), SUBJECTS_PER_FILE):
        chunk = dict(people[start : start + SUBJECTS_PER_FILE])
        # One subject a line, as an HR export would be.
        path = out / "directory" / f"people-{start // SUBJECTS_PER_FILE:03d}.subjects.json"
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in chunk.items())
        path.write_text("{\n" + body + "\n}\n")


# ---- Cedar ----


def cedar_type(name: str) -> str:
    return name.replace("-", "_")


def _like(pattern: str) -> str:
    return pattern.replace("**", "*")


def _cedar_rule(rule: Rule, role: str | None) -> str:
    principal = f'principal in Role::"{role}"' if role else "principal"
    if not rule.actions:
        action = "action"
    elif len(rule.actions) == 1:
        action = f'action == Action::"{rule.actions[0]}"'
    else:
        action = "action in [" + ", ".join(f'Action::"{a}"' for a in rule.actions) + "]"
    rtype = cedar_type(rule.rtype)
    conds: list[str] = []
    if rule.exact:
        resource = f'resource == {rtype}::"{rule.pattern}"'
    else:
        resource = f"resource is {rtype}"
        conds.append(f'resource.path like "{_like(rule.pattern)}"')
    if rule.owner_only:
        conds.append("resource has owner && resource.owner == principal.id")
    effect = "permit" if rule.effect == "allow" else "forbid"
    when = f" when {{ {' && '.join(conds)} }}" if conds else ""
    return f"{effect} ({principal}, {action}, {resource}){when};"


def cedar_policies(scn: Scenario) -> str:
    lines = [_cedar_rule(r, None) for r in scn.global_rules]
    for team in scn.teams:
        for role in team.roles:
            lines.extend(_cedar_rule(r, role.name) for r in role.rules)
        lines.extend(_cedar_rule(r, None) for r in team.top_rules)
    return "\n".join(lines) + "\n"


def _uid(etype: str, eid: str) -> dict[str, str]:
    return {"type": etype, "id": eid}


def cedar_entities(scn: Scenario) -> list[dict[str, Any]]:
    """Roles, every subject a request names (with its roles) and every resource."""
    entities: dict[tuple[str, str], dict[str, Any]] = {}
    for role in scn.roles():
        parents = [_uid("Role", p) for p in role.inherits]
        entities["Role", role.name] = {"uid": _uid("Role", role.name), "attrs": {}, "parents": parents}
    held: dict[str, list[str]] = {}
    for subject, entry in scn.directory.items():
        held.setdefault(subject, []).extend(entry.get("roles", ()))
    for role_name, subject in scn.grants():
        held.setdefault(subject, []).append(role_name)
    for req in scn.requests:
        held.setdefault(f"{req.stype}:{req.sid}", [])
    for subject, roles in held.items():
        stype, sid = subject.split(":", 1)
        parents = [_uid("Role", r) for r in roles]
        entities[stype, sid] = {"uid": _uid(stype, sid), "attrs": {"id": sid}, "parents": parents}
    for req in scn.requests:
        rtype = cedar_type(req.rtype)
        attrs: dict[str, str] = {"path": req.rid}
        if req.owner is not None:
            attrs["owner"] = req.owner
        entities[rtype, req.rid] = {"uid": _uid(rtype, req.rid), "attrs": attrs, "parents": []}
    return list(entities.values())


def cedar_request(req: Req) -> dict[str, Any]:
    return {
        "principal": _uid(req.stype, req.sid),
        "action": _uid("Action", req.action),
        "resource": _uid(cedar_type(req.rtype), req.rid),
        "context": {},
    }


# ---- Casbin ----

CASBIN_MODEL = """\
[request_definition]
r = sub, sid, obj, act, owner

[policy_definition]
p = sub, obj, act, eft, cond

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.act == "*" || r.act == p.act) && objMatch(r.obj, p.obj) \
&& (p.sub == "*" || g(r.sub, p.sub)) && (p.cond == "-" || r.owner == r.sid)
"""


def _casbin_rule(rule: Rule, role: str | None) -> Iterator[str]:
    sub = role or "*"
    obj = f"{rule.rtype}:{_like(rule.pattern)}"
    cond = "owner" if rule.owner_only else "-"
    for act in rule.actions or ("*",):
        yield f"p, {sub}, {obj}, {act}, {rule.effect}, {cond}"


def casbin_policy_csv(scn: Scenario) -> str:
    lines: list[str] = []
    for rule in scn.global_rules:
        lines.extend(_casbin_rule(rule, None))
    for team in scn.teams:
        for role in team.roles:
            for rule in role.rules:
                lines.extend(_casbin_rule(rule, role.name))
            lines.extend(f"g, {role.name}, {parent}" for parent in role.inherits)
        for rule in team.top_rules:
            lines.extend(_casbin_rule(rule, None))
        lines.extend(f"g, {subject}, {role}" for role, subject in team.grants)
    for subject, entry in scn.directory.items():
        lines.extend(f"g, {subject}, {role}" for role in entry.get("roles", ()))
    return "\n".join(lines) + "\n"


def casbin_request(req: Req) -> tuple[str, str, str, str, str]:
    obj = f"{req.rtype}:{req.rid}"
    return (f"{req.stype}:{req.sid}", req.sid, obj, req.action, req.owner or "")


# ---- all of it ----


@dataclass(frozen=True, slots=True)
class Written:
    root: Path
    ours: Path
    cedar_policies: Path
    cedar_entities: Path
    casbin_model: Path
    casbin_policy: Path
    requests: Path


def write_all(scn: Scenario, root: Path) -> Written:
    root.mkdir(parents=True, exist_ok=True)
    written = Written(
        root,
        root / "ours",
        root / "cedar" / "policies.cedar",
        root / "cedar" / "entities.json",
        root / "casbin" / "model.conf",
        root / "casbin" / "policy.csv",
        root / "requests.json",
    )
    write_ours(scn, written.ours)
    written.cedar_policies.parent.mkdir(exist_ok=True)
    written.cedar_policies.write_text(cedar_policies(scn))
    written.cedar_entities.write_text(json.dumps(cedar_entities(scn)))
    written.casbin_model.parent.mkdir(exist_ok=True)
    written.casbin_model.write_text(CASBIN_MODEL)
    written.casbin_policy.write_text(casbin_policy_csv(scn))
    written.requests.write_text(json.dumps([r.as_list() for r in scn.requests]))
    return written


def load_requests(path: Path) -> list[Req]:
    return [Req(*row) for row in json.loads(path.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=[s.name for s in SIZES])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    size = next(s for s in SIZES if s.name == args.size)
    scn = make_scenario(size)
    write_all(scn, args.out)
    print(f"{scn.rule_count()} rules, {len(scn.directory)} subjects -> {args.out}")


if __name__ == "__main__":
    main()
