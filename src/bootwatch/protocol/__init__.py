"""bootwatch.protocol"""
