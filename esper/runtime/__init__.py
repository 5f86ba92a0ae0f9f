"""Ray glue: device choice inside actors, cluster resource sizing."""
