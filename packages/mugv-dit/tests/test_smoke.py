def test_distribution(check_distribution):
    check_distribution("mugv-dit", "mugv.dit")
