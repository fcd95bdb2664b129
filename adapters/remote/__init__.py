"""Remote models: the HTTP adapter, its transport, wire formats, presets and vendor APIs."""
