"""Protocol room: blueprints for agents and providers (JSON, CSRF-exempt)."""
