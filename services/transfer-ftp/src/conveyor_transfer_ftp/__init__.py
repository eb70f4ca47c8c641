"""transfer-ftp: delivers files to FTP and FTPS servers (a temporary name, then a rename)."""
