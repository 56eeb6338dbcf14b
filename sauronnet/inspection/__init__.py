"""Looking inside a trained network: per-layer feature maps of one case (:mod:`.feature_maps`) and the metrics
that show whether they form clusters (:mod:`.clusters`); ``sauron_inspect`` writes both."""
