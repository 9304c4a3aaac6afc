from pdp.cli import main

raise SystemExit(main())
