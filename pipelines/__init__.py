"""Everything that connects preprocessors and models: data, splits, training, reports, prediction.

Modules import TensorFlow/Keras only inside the functions that need them, so that importing
`pipelines` (and `convpipe --help`) stays fast.
"""

# The one place the version is written: pyproject.toml reads it from here. Cache keys include it,
# and reading it from the installed metadata instead costs about 15 ms per process.
__version__ = "0.1.0"
