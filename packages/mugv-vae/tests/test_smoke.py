def test_distribution(check_distribution):
    check_distribution("mugv-vae", "mugv.vae")
