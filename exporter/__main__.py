"""Allow ``python -m exporter``."""

from exporter.cli import app

if __name__ == "__main__":
    app()
