"""Test support that ships with the package: the independent float64 reference of the CAM formulas
(:mod:`captum_camplus.testing.reference`), used by the tests, the benchmarks and method authors."""
