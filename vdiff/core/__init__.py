"""Layer-0 pieces every other layer may import (and which import nothing above them): the
workdir (lock, the run's config.json), checkpoint restore (EMA params) and the pixel
convention; errors, runtime and distributed belong here too."""
