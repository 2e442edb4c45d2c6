"""Trust that travels with a run folder: an OpenSSF model signature over its deployable files
(``tlx sign``), the check where artifacts are loaded (``--public-key``), an in-toto/SLSA
provenance statement and a Hugging Face style model card."""
