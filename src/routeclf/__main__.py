from routeclf.cli import main

raise SystemExit(main())
