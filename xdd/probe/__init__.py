"""Probing a finished run with an image of one's own (the Probe page).

- :mod:`xdd.probe.image`: any picture (a canvas drawing, an upload) made into an MNIST-like
  28 x 28 input the way MNIST was made; pure numpy and PIL.
- :mod:`xdd.probe.examples`: the built-in probes, made by code.
- :mod:`xdd.probe.prober`: one run's networks and fitted scorers scoring a new image exactly
  as the run scored its test images, with its percentile, nearest training images, class
  posterior and place on the run's maps;
- :mod:`xdd.probe.loading`: that run rebuilt from what it kept (``load``).

This layer sits above :mod:`xdd.pipeline` (it reads the run's scorers and references) and
never trains; torch is imported inside the functions that need it.
"""
