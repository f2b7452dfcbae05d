"""Azure ML specs (cluster, environment, image) shipped as package data; see their comments."""
