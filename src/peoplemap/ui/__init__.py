"""The Streamlit app over peoplemap.Library: Index, Clusters and Search pages (`peoplemap ui`)."""
