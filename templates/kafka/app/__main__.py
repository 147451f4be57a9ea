"""Start the consumer: `python -m app` (settings from the environment, see README.md)."""

from app.consumer import main

if __name__ == "__main__":
    main()
