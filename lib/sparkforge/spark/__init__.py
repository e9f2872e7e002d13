"""The one module that builds SparkSessions (see :mod:`sparkforge.spark.session`)."""
