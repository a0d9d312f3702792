"""Distribution: plugin indexes, resolution, downloads (HTTPS, file, OCI) and atomic installs."""
