def test_distribution(check_distribution):
    check_distribution("mugv-infra", "mugv.infra")
