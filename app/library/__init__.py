"""Getting a model: the curated catalog, the Hub download manager, conversion, and the library page."""
