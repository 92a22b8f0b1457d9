"""Theme files shipped with bertui (YAML, validated into textual.theme.Theme)."""
