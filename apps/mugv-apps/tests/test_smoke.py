def test_distribution(check_distribution):
    check_distribution("mugv-apps", "mugv.apps")
