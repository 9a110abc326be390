"""bootwatch.tpm"""
