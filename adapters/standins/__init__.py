"""Stand-in models (BlazeFace and friends, from pip packages) and the tasks built on them."""
