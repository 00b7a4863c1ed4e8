"""Layer-0 pieces every other layer may import (and which import nothing above them): for now
the workdir (lock, the run's config.json); errors, runtime and distributed belong here too."""
