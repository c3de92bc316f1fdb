"""routeclf: train, verify, export and serve the text classifiers an LLM request router depends on."""

__version__ = "0.1.0"
