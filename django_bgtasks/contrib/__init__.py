"""Optional integrations, each importing a library of its own (an extra of the package).
Nothing in django_bgtasks imports them: a project names one in BGTASKS['HOOKS']."""
