"""A model at a new hospital: without labels, batch-norm statistics re-estimated on the site's X-rays (`adabn`) and
the site's own operating point fitted on its scores (`operating_point`), each taken where its guard trusts it
(the `adapt` command); with labels, a refit of the calibration and threshold (`refit`); and what each gains,
cross-fitted (`site_eval`)."""
