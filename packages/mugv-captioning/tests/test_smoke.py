def test_distribution(check_distribution):
    check_distribution("mugv-captioning", "mugv.captioning")
