"""The deployment step: package a verified, benched run for a server (a Triton repository,
KServe manifests); above verify, bench and serve's choice, whose verdicts it reads."""
