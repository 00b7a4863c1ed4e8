"""Layer-0 pieces every other layer may import (and which import nothing above them): the
workdir (lock, the run's config.json) and checkpoint restore (EMA params); errors, runtime
and distributed belong here too."""
