# This file is generated from assets/configuration/spec.yaml by datadog-checks-dev's
# configuration tooling. Do not edit it: change the spec, then run
#     python scripts/sync_config.py



def instance_disable_generic_tags():
    return False


def instance_empty_default_hostname():
    return False


def instance_enable_legacy_tags_normalization():
    return True


def instance_min_collection_interval():
    return 15


def instance_rescan_interval():
    return 60
