"""provider-sync: copies partners' files from FTP, FTPS and SFTP servers into S3."""
