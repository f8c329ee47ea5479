use skiff_streams::spdy;
