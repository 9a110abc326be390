"""bootwatch.attest"""
