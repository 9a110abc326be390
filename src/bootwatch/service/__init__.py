"""bootwatch.service"""
