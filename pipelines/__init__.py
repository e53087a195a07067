"""Everything that connects preprocessors and models: data, splits, training, reports, prediction.

Modules import TensorFlow/Keras only inside the functions that need them, so that importing
`pipelines` (and `convpipe --help`) stays fast.
"""
