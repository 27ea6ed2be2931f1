def test_distribution(check_distribution):
    check_distribution("mugv-data", "mugv.data")
