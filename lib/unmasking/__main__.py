from unmasking.cli import main

raise SystemExit(main())
