"""The tool table, its models, and the httpx adapter that carries each call to PostHog."""
