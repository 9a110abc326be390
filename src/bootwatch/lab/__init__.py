"""bootwatch.lab"""
