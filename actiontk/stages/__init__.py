"""The pipeline stages, one module each: ``extract`` (more arrive with their issues)."""
