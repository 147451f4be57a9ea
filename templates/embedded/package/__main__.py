"""`python -m <package> score IN -o OUT`: batch scoring of CSV, JSON Lines or Parquet files."""

from ._score import main

raise SystemExit(main())
