"""veriscale: measure whether verifier-based (VB) or verifier-free (VF) training scales
test-time compute better, after Setlur et al., ICML 2025."""

__version__ = "0.1.0"
