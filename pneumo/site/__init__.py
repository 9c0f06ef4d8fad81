"""A model at a new hospital: batch-norm statistics re-estimated without labels (`adabn`, used by the `adapt`
command), a refit with the site's labels (`refit`), and what each gains, cross-fitted (`site_eval`)."""
