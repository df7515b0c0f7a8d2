from serve_app.provisioning.cli import main

raise SystemExit(main())
