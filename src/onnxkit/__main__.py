from onnxkit.cli import main

raise SystemExit(main())
