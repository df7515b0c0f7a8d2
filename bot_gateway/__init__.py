"""Everything Discord: request verification, interaction routing, the webhook client, commands."""
