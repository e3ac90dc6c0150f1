"""authmd: a self-hosted auth.md server for AI agents."""
