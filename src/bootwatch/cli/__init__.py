"""bootwatch.cli"""
