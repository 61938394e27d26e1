"""The pilot scenario without real models: a scripted "brain" behind fake Anthropic and OpenAI APIs, so the real
Claude Code and Codex CLIs (or the stand-in) run the review loop through the bridge with no human relay."""
