"""`phaselens report`: a recording in, a page a person reads in a minute out."""
